"""Runners: one interface (activate / infer / deactivate) over every backend's three graphs; one module per backend."""
