"""Delivery tracking: what happens to a message after a provider took it.

Providers report by webhook (SendGrid's Signed Event Webhook, Twilio's status callbacks);
each report is verified by the provider's own SDK helper, normalized to a `ProviderEvent`
(`events.py`), stored once per provider event and, when it says the address is gone (hard
bounce, spam complaint, STOP), marks the contact so later decisions see `no_address`.
Recipients unsubscribe in one click (RFC 8058) through signed links (`unsubscribe.py`).
"""
