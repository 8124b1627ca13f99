"""End-to-end jobs built from the stages: ``quickstart`` is the README's main job."""
