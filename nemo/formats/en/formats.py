"""One date format for the dashboard and the admin (FORMAT_MODULE_PATH): ISO-like, 24 h, in UTC
with the zone named (TIME_ZONE is UTC)."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
TIME_FORMAT = "H:i:s"
