"""Certification exports: BagIt bundles of a plantation's history that anyone can verify.

- :mod:`certify.rows` — the row formats of the bundle's files (one place, shared by export
  and verify, so the two can never disagree about a column).
- :mod:`certify.source` — streaming reads of readings, gaps and batch records from InfluxDB.
- :mod:`certify.bag` — BagIt (RFC 8493) writing with hashing on the fly, and checking.
- :mod:`certify.orgkey` — the exporting organisation's Ed25519 key and the manifest seal.
- :mod:`certify.devices` — the device registry as it goes into the bundle.
- :mod:`certify.report` — completeness, calibration history and the HTML report.
- :mod:`certify.export` / :mod:`certify.verify` — ``farmtel export`` and ``farmtel verify``.

See docs/certification.md for what a bundle proves and what it does not.
"""
