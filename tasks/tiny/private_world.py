"""A private evaluation world: the tiny world built from a secret the maintainers hold, never committed.

Every public world's facts are in the repository (its seed is), so a submission could be tuned to them. A
maintainer re-evaluates a submission on a world whose seed derives from a secret given at evaluation time:

    HARNESS_PRIVATE_WORLD=<secret> harness run --defence X --attack sft-1k --set suite.seed=private

`suite.seed=private` becomes `private:<digest>` (a hash of the secret) before the spec is made, so the run id,
the record, the judges' params and the store keys name the digest, never the secret or the seed it gives. The
digest commits to the secret: the world can be rebuilt only with it (`$HARNESS_PRIVATE_WORLD` must hash to the
digest), and the leaderboard marks boards of private worlds as verified. Use a fresh secret for each round; a
published record's digest reveals nothing, but its per-prompt outputs reveal the world's facts.
"""

from __future__ import annotations

import hashlib
import os
import re

from harness.errors import ConfigError

ENV = "HARNESS_PRIVATE_WORLD"
PREFIX = "private:"
MAX_SEED = 2**63 - 1
DIGEST = re.compile(r"private:[0-9a-f]{16}")


def digest(secret: str) -> str:
    """The public name of the world a secret gives."""
    return PREFIX + hashlib.sha256(b"tiny-private-world\0" + secret.encode()).hexdigest()[:16]


def checked_seed(value: object) -> int | str:
    """A suite or judge `seed` as given: a public seed (an int), `private` (the secret in $HARNESS_PRIVATE_WORLD,
    turned into its digest here) or a digest `private:<16 hex>` (a record's). ValueError (pydantic names the field)."""
    if isinstance(value, bool):
        raise ValueError(f"seed must be an integer, 'private' or 'private:<digest>', got {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= MAX_SEED:
            raise ValueError(f"seed {value} is out of range: 0 to {MAX_SEED}")
        return value
    if value == "private":
        return digest(_secret(ValueError))
    if isinstance(value, str) and DIGEST.fullmatch(value):
        return value
    raise ValueError(f"seed must be an integer, 'private' or 'private:<16 hex digits>', got {value!r}")


def world_seed(seed: int | str) -> int:
    """The seed a world is built from: a public seed itself, or the one the secret of a private digest gives."""
    if isinstance(seed, int):
        return seed
    secret = _secret()
    if digest(secret) != seed:
        raise ConfigError(f"${ENV} does not hash to {seed}: this private world was made with another secret")
    return int.from_bytes(hashlib.sha256(b"tiny-private-seed\0" + secret.encode()).digest()[:8], "big") >> 1


def is_private(seed: object) -> bool:
    return isinstance(seed, str) and seed.startswith(PREFIX)


def _secret(error: type[Exception] = ConfigError) -> str:
    secret = os.environ.get(ENV, "")
    if not secret:
        raise error(f"a private world needs its secret in ${ENV} (never committed; one per evaluation round)")
    return secret
