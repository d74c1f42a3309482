"""Task kinds beyond a plain call, one module each, plugged into the scheduler."""
