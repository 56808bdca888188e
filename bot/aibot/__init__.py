"""The WeCom intelligent bot in group chats: later replies through response_url, and the group
rules (quiet hours, a per-group reply rate limit). The wire format is bot/channels/wecom_aibot.py."""
