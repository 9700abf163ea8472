"""The service layer: the work behind each route."""
