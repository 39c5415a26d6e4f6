{#-
    Fail closed: validate every column's meta against privacy_policy.yml before anything runs.
    Use in dbt_project.yml:  on-run-start: ["{{ privacy_lakehouse.assert_privacy_policy() }}"]
    The check runs in Python, through the DuckDB function pl_policy_violations that the
    project's dbt-duckdb plugin registers (privacy_lakehouse.policy.register). Any violation,
    a missing policy file or a missing function fails the run with a message naming the model,
    the column and the rule.
-#}
{% macro assert_privacy_policy() %}
    {{ return(adapter.dispatch('assert_privacy_policy', 'privacy_lakehouse')()) }}
{% endmacro %}

{% macro default__assert_privacy_policy() %}
    {% if execute %}
        {%- set payload = privacy_lakehouse.privacy_policy_nodes_json() -%}
        {%- set result = run_query(
            "select pl_policy_violations('" ~ payload | replace("'", "''") ~ "') as violations"
        ) -%}
        {%- set violations = fromjson(result.columns[0].values()[0]) -%}
        {% if violations | length > 0 %}
            {{ exceptions.raise_compiler_error(
                "Privacy policy check failed (fail closed): " ~ violations | length
                ~ " violation(s) of privacy_policy.yml:\n  - " ~ violations | join("\n  - ")
            ) }}
        {% endif %}
        {{ log("Privacy policy check passed.", info=False) }}
    {% endif %}
    {{ return('') }}
{% endmacro %}

{% macro duckdb__assert_privacy_policy() %}
    {% if execute %}
        {#- Without the function the check cannot run: say so rather than let a catalog error
            speak. -#}
        {%- set found = run_query(
            "select count(*) from duckdb_functions() where function_name = 'pl_policy_violations'"
        ) -%}
        {% if found.columns[0].values()[0] == 0 %}
            {{ exceptions.raise_compiler_error(
                "Privacy policy check cannot run (fail closed): the DuckDB function "
                ~ "pl_policy_violations is not registered. Add the project's plugin to "
                ~ "profiles.yml (plugins: [{module: ...}]) so it calls "
                ~ "privacy_lakehouse.policy.register(conn)."
            ) }}
        {% endif %}
    {% endif %}
    {{ return(privacy_lakehouse.default__assert_privacy_policy()) }}
{% endmacro %}
