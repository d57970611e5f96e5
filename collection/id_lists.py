"""`field__any_of=ids`: a list of ids as ONE array parameter on PostgreSQL (`= ANY(%s)`), the
plain `IN (%s, %s, …)` elsewhere. Pass a set (or any iterable but a list or tuple, which
Django walks value by value looking for expressions).

Why: an export reads its rows a chunk at a time by ids, ~2,000 per chunk. As `__in`, each id
is a separate parameter that Django prepares, the text guard (config/dbtext.py) visits and
psycopg splices into the statement one by one: at 56,000 judgements that was ~225,000
parameters and a third of the export's time (profiled; BENCHMARKS.md, "Scale"). As one
array literal ('{1,2,3}', cast to bigint[] by the database) the list costs one parameter.
"""

from django.db.models import Field, ForeignKey, Lookup


class AnyOf(Lookup):
    lookup_name = "any_of"
    prepare_rhs = False

    def get_prep_lookup(self):
        return [int(value) for value in self.rhs]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        if connection.vendor == "postgresql":  # one text parameter: '{1,2,3}'
            return f"{lhs} = ANY(%s::bigint[])", [
                *lhs_params,
                "{" + ",".join(map(str, self.rhs)) + "}",
            ]
        if not self.rhs:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(self.rhs))})", [*lhs_params, *self.rhs]


Field.register_lookup(AnyOf)
ForeignKey.register_lookup(AnyOf)  # foreign keys keep lookups of their own
