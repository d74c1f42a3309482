"""Task kinds beyond a plain call (issue 10): each plugs into the scheduler's transition point."""
