"""The report's Jinja2 templates (templates/): index.html and comparison.md from one data model."""
