"""The toy worlds: each task owns its text grammar, its prompts and (later) its gold reward."""
