"""Siyu: webhook bot and chat-ops service for private-domain WeChat communities."""
