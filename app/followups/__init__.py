"""Follow-up automation: rules that turn counted signals into reminders and CRM tasks.

``schedule`` holds the business-day arithmetic, ``rules`` the rule shapes and their
validation, ``triggers`` decides whether a rule fires on a message, ``service`` changes
rules on behalf of a person, and ``preview`` replays a rule over recent history. The
workers that evaluate and deliver live in ``workers.followups``.
"""
