"""tutorstack internal services (each its own package and process)."""
