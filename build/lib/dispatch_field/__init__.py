"""The field protocol and the asyncio reference client for squads' phones."""
