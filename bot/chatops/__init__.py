"""Staff chat-ops: one command layer every channel reaches through the router.

Roles come from staff.yaml (`roles`), wording from persona/chatops.yaml (`texts`),
commands are parsed and checked in `parsing` / `specs`, bulk commands wait for 确认 in
`proposals`, every attempt lands in the audit table (`audit`), and `service.ChatOps`
ties it together for `handlers/commands.py`.
"""
