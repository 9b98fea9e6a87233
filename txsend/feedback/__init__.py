"""What came back about sent mail: DSNs, complaints and provider events, parsed; and mailboxes.

    events     Kind, Feedback, Unparsed, Item, MailSource: the shapes everything else returns
    reports    parse_message(raw, source): a DSN (RFC 3464), ARF (RFC 5965) or older bounce
    providers  read_events(path): SES (direct or through SNS), Postmark, SendGrid, Mailgun
    sources    MaildirSource, MboxSource: raw messages, marked handled after the journal commit

No journal here and no network but an IMAP mailbox: matching a report to a row, and what
that changes, is the use case's and the journal's work.
"""
