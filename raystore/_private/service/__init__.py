"""Services: typed HTTP APIs over runners, as a Ray Serve application."""
