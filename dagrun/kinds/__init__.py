"""Task kinds (issue 10): each kind's logic in its own module, called from small hooks."""
