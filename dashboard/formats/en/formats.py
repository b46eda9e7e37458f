"""How Django itself shows a moment in English (the admin's lists and read-only fields, ``|date`` without a
format): as the dashboard's own pages do, with its time zone, so staff reading a time know whose clock it is."""
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
