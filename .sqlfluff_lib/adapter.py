"""Lint-time stand-in for dbt's `adapter` in sqlfluff's jinja templater: dispatched macros
render as a neutral expression so model SQL can be linted without a database."""


def dispatch(macro_name, macro_namespace=None):
    def render(*args, **kwargs):
        return "null"

    return render


def quote(identifier):
    return '"' + str(identifier) + '"'
