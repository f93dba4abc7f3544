"""The web app's pages, scripts and stylesheet: package data served by name (pipeline/webapp/app.py)."""
