"""Writing analysis service (port 8004): calibrated rubric scores, metrics, issues with exact spans."""
