"""Privacy mode: prompts and answers encrypted between the user's machine and the gateway."""
