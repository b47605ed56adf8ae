"""Results -> rich tables, JSON, CSV, Markdown. The only place that formats numbers."""
