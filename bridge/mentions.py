"""@handle -> public accounts: who a personal message is really for.

A message whose `data.message` names `@handle` of an active public account
goes to that account (to each of them, for several) instead of the user it
was addressed to. Unknown and inactive handles are plain text.
"""

import re

from accounts import directory

MENTION = re.compile(r"(?<![\w@])@([a-z][a-z0-9_]{1,63})(?![\w])")


async def amentioned(data) -> list[str]:
    """Handles of the active public accounts `data.message` mentions, in order."""
    if not isinstance(data, dict):
        return []
    text = data.get("message")
    if not isinstance(text, str) or "@" not in text:
        return []
    named = list(dict.fromkeys(MENTION.findall(text)))
    if not named:
        return []
    accounts = await directory.aaccounts()
    return [handle for handle in named if accounts.get(handle)]
