"""Catalog readers: one per engine, each turning system catalogs into a `SchemaBuilder`.

`MetaData.reflect` issues several queries per table; these read each catalog once for the
whole schema, which is what keeps a 1000-table snapshot in well under a second.
"""
