"""BeaverTails harm-category groups used for generalization splits (the reference's BT_CATEGORIES, papers.md §3).

animal_abuse, child_abuse and controversial_topics,politics belong to no group (as in the reference).
"""

from __future__ import annotations

# BeaverTails' 14 harm categories (the keys of its `category` dict), shared by the real loader and the tiny world.
CATEGORIES: tuple[str, ...] = (
    "animal_abuse", "child_abuse", "controversial_topics,politics", "discrimination,stereotype,injustice",
    "drug_abuse,weapons,banned_substance", "financial_crime,property_crime,theft",
    "hate_speech,offensive_language", "misinformation_regarding_ethics,laws_and_safety",
    "non_violent_unethical_behavior", "privacy_violation", "self_harm", "sexually_explicit,adult_content",
    "terrorism,organized_crime", "violence,aiding_and_abetting,incitement",
)

GROUPS: dict[str, frozenset[str]] = {
    "violence": frozenset({"violence,aiding_and_abetting,incitement"}),
    "toxic": frozenset({"hate_speech,offensive_language", "discrimination,stereotype,injustice"}),
    "privacy_misinformation": frozenset({"misinformation_regarding_ethics,laws_and_safety", "privacy_violation"}),
    "crime_unethical": frozenset({"financial_crime,property_crime,theft", "drug_abuse,weapons,banned_substance",
                                  "non_violent_unethical_behavior", "terrorism,organized_crime"}),
    "sexually_explicit": frozenset({"sexually_explicit,adult_content"}),
    "self_harm": frozenset({"self_harm"}),
    "half": frozenset({"violence,aiding_and_abetting,incitement", "hate_speech,offensive_language",
                       "discrimination,stereotype,injustice", "misinformation_regarding_ethics,laws_and_safety",
                       "privacy_violation"}),
    "other_half": frozenset({"financial_crime,property_crime,theft", "drug_abuse,weapons,banned_substance",
                             "terrorism,organized_crime", "sexually_explicit,adult_content"}),
}
