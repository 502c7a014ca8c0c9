#!/usr/bin/env python3
"""Writes the small MaxMind (GeoIP2-City layout) database edge's tests and
benchmarks use: a few documentation prefixes with a location, a continent
and a country. Needs `pip install mmdb-writer`.

    scripts/make-test-mmdb.py OUT.mmdb [CIDR LAT LON CONTINENT COUNTRY]...
"""
import sys

from mmdb_writer import MMDBWriter, MmdbF64
from netaddr import IPSet

DEFAULT = [
    ("203.0.113.0/24", 1.35, 103.82, "AS", "SG"),
    ("198.51.100.0/24", 40.71, -74.01, "NA", "US"),
    ("2001:db8:200::/48", 48.85, 2.35, "EU", "FR"),
]


def main():
    out = sys.argv[1]
    rest = sys.argv[2:]
    rows = DEFAULT
    if rest:
        rows = [
            (rest[i], float(rest[i + 1]), float(rest[i + 2]), rest[i + 3], rest[i + 4])
            for i in range(0, len(rest), 5)
        ]
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    for cidr, lat, lon, continent, country in rows:
        w.insert_network(
            IPSet([cidr]),
            {
                "continent": {"code": continent},
                "country": {"iso_code": country},
                "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
            },
        )
    w.to_db_file(out)


if __name__ == "__main__":
    main()
