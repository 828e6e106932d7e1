"""What the intake console reads besides the intake itself: a caller's earlier requests, the
seat's own recent requests, and possible duplicates of a request about to be sent.

``duplicates`` holds the rule (pure); ``reads`` gathers from the live state (Redis) and the
ledger (SQL), the live state winning where both know a request (the ledger follows it by the
writer's delay, usually well under a second).
"""
