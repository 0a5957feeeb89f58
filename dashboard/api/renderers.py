"""CSV for the spend report, so the dashboard's export and a spreadsheet read the same numbers."""

import csv
import io

from rest_framework.renderers import BaseRenderer

SPEND_COLUMNS = ("group", "cost", "calls", "prompt_tokens", "completion_tokens")


class SpendCSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=SPEND_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(data["results"])
        return out.getvalue().encode(self.charset)
