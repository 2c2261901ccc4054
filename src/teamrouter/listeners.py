"""The names of the after-commit listener lists a runtime keeps in `rt.extras`, in one place.

A change that caches must hear about (a key, a membership, an org's settings) runs each listener
of its list after commit: this process's caches, and with Redis the publisher that tells the other
processes (storage.invalidation), which run the same lists when the message arrives.
"""

KEY_LISTENERS = "key_listeners"  # each called with (key hash)
MEMBERSHIP_LISTENERS = "membership_listeners"  # each called with (organization id, user id)
ORG_SETTINGS_LISTENERS = "org_settings_listeners"  # each called with (organization id)
