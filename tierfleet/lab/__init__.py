"""The local lab fleet (see README.md beside this file)."""
