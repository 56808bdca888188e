"""HTTP surface: the WeChat callback endpoints and the operations endpoints."""
