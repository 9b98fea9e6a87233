"""`txsend init`: a small working job to start from."""

from __future__ import annotations

from pathlib import Path

from txsend.errors import UsageError

SAMPLE: dict[str, str] = {
    "job.yaml": """\
# A txsend job. Send it with:  txsend run job.yaml --relay smtp://127.0.0.1:2525
# (start a local capture server first with:  txsend sink --port 2525)
name: sample
from: "Sample Sender <sender@example.com>"
reply_to: help@example.com
subject: "Hello {{ first_name }}, your {{ plan }} plan is ready"
text: message.txt
html: message.html
recipients:
  file: recipients.csv
  to: email
  name: "{{ first_name }} {{ last_name }}"
headers:
  X-Campaign: sample
# relays:
#   - url: smtp://mailer@smtp.example.com:587?tls=starttls
#     password_env: SMTP_PASSWORD
#     connections: 4
#     messages_per_connection: 100
# schedule:                        # when it may send; without it: at once
#   timezone: Europe/Paris
#   not_after: 2026-12-31T18:00    # rows still unsent then become `expired`
#   windows: ["Mon-Fri 08:00-18:00"]
""",
    "message.txt": """\
Hello {{ first_name }},

Your {{ plan }} plan is ready. Reply to this message if you need anything.

-- The Sample team
""",
    "message.html": """\
<!doctype html>
<html>
  <body>
    <p>Hello {{ first_name }},</p>
    <p>Your <strong>{{ plan }}</strong> plan is ready.
       Reply to this message if you need anything.</p>
    <p>&mdash; The Sample team</p>
  </body>
</html>
""",
    "recipients.csv": """\
email,first_name,last_name,plan
ada@example.com,Ada,Lovelace,pro
alan@example.org,Alan,Turing,free
grace@example.net,Grace,Hopper,team
""",
}


def write_sample(directory: Path) -> list[Path]:
    """Write the sample job into directory; refuse if any of its files exist."""
    targets = [directory / name for name in SAMPLE]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise UsageError(
            "refusing to overwrite " + ", ".join(existing),
            hint="choose an empty folder: txsend init NEW_DIR",
        )
    directory.mkdir(parents=True, exist_ok=True)
    for path in targets:
        path.write_text(SAMPLE[path.name], encoding="utf-8")
    return targets
