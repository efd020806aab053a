"""Outside packages and plugin names: a name has one owner, and every clash is an error naming both packages.
Each case is a separately "installed" distribution (tests.outside) driven through the CLI in a subprocess."""

from importlib import metadata

from tests.outside import DEFENCE, harness_with, make_distribution

BENCH = f"immunization-bench {metadata.version('immunization-bench')}"


def _lines(text, name):
    return [line for line in text.splitlines() if line.split()[:1] == [name] or f" {name} " in line]


def test_outside_package_declaring_a_builtin_name_is_a_clear_error(tmp_path):
    """An outside distribution declares 'repnoise': the lookup fails naming both distributions; the listing
    marks the name BROKEN and goes on; other defences still run."""
    pkg = make_distribution(tmp_path / "shadow", "shadow-defence", "1.2", modules={
        "shadow_repnoise": DEFENCE.format(name="repnoise")},
        entry_points={"harness.defences": {"repnoise": "shadow_repnoise"}})
    run = harness_with([pkg], "run", "--defence", "repnoise", "--attack", "sft-1k")
    assert run.returncode == 2 and run.stdout == ""
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: defence 'repnoise' is declared by 2 distributions")
    assert f"{BENCH} (module defences.repnoise)" in err and "shadow-defence 1.2 (module shadow_repnoise)" in err
    listing = harness_with([pkg], "list", "defences")
    assert listing.returncode == 0
    (line,) = _lines(listing.stdout, "repnoise")
    assert "BROKEN" in line and "shadow-defence" in line and "immunization-bench" in line
    assert "[v1]" in _lines(listing.stdout, "none")[0]
    plugins = harness_with([pkg], "plugins")
    assert plugins.returncode == 0 and "BROKEN" in _lines(plugins.stdout, "repnoise")[0]


def test_module_registering_another_packages_name_is_an_error(tmp_path):
    """The entry point says 'sneaky' but the module registers 'repnoise': refused, naming both modules and
    both distributions; the built-in repnoise is untouched."""
    pkg = make_distribution(tmp_path / "sneaky", "sneaky-pkg", "0.3", modules={
        "sneaky_mod": DEFENCE.format(name="repnoise")},
        entry_points={"harness.defences": {"sneaky": "sneaky_mod"}})
    run = harness_with([pkg], "plugins", "check", "sneaky")
    assert run.returncode == 1, run.stderr
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("FAIL loads")]
    assert "module 'sneaky_mod' (distribution sneaky-pkg 0.3)" in line
    assert f"belongs to {BENCH} (module defences.repnoise)" in line
    listing = harness_with([pkg], "list", "defences")
    assert "BROKEN" in _lines(listing.stdout, "sneaky")[0]
    assert "RepNoise" in _lines(listing.stdout, "repnoise")[0]


def test_two_outside_distributions_with_one_name_are_an_error(tmp_path):
    one = make_distribution(tmp_path / "one", "twin-one", "1.0", modules={"twin_one": DEFENCE.format(name="twin")},
                            entry_points={"harness.defences": {"twin": "twin_one"}})
    two = make_distribution(tmp_path / "two", "twin-two", "2.0", modules={"twin_two": DEFENCE.format(name="twin")},
                            entry_points={"harness.defences": {"twin": "twin_two"}})
    run = harness_with([one, two], "run", "--defence", "twin", "--attack", "sft-1k")
    assert run.returncode == 2
    assert "twin-one 1.0 (module twin_one)" in run.stderr and "twin-two 2.0 (module twin_two)" in run.stderr
    alone = harness_with([one], "plugins", "--kind", "defence")
    (line,) = _lines(alone.stdout, "twin")
    assert line.split()[:4] == ["defence", "twin", "7", "twin-one"] and line.rstrip().endswith("twin_one.py")


def test_plugins_listing_bad_kind_is_exit_2(tmp_path):
    run = harness_with([], "plugins", "--kind", "defense")
    assert run.returncode == 2 and run.stderr.startswith("error: Unknown kind 'defense'")
