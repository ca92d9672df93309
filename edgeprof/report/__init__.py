"""Renderers of result records: terminal tables now; plots and HTML build on the same records."""
