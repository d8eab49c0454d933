"""The local engine server (FastAPI + uvicorn)."""
