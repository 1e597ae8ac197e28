"""Diagnosis logic, pure: no I/O. Rules as a decision tree, root-cause ranking over metrics
(``selfheal rca``), the origin of an error trace, and the combination of everything found into
ranked hypotheses. The activities in ``activities/evidence`` gather what this room reasons on."""
