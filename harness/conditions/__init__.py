"""The four immunization conditions (papers.md §1): resistance, stability, generalization, trainability."""
