"""The web console (port 8090): students, teachers, operators; a browser client of the public API."""
