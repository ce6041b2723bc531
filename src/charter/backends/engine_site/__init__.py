"""Start-up hook for vLLM's engine processes: see sitecustomize.py (a package only so that it ships)."""
