"""Task kinds beyond a plain call (issue 10): one module per kind."""
