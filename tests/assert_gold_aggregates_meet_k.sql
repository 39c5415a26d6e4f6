-- Every published aggregate row describes at least k distinct customers (k per release in
-- dbt_project.yml vars, mirrored from privacy_policy.yml). Returns the offending row counts only.
select
    'agg_customers_by_segment' as release_name,
    count(*) as rows_below_k
from {{ ref('agg_customers_by_segment') }}
where customer_count < {{ var('min_k_gold') }}
having count(*) > 0

union all

select
    'agg_spend_by_category_month' as release_name,
    count(*) as rows_below_k
from {{ ref('agg_spend_by_category_month') }}
where customer_count < {{ var('min_k_gold') }}
having count(*) > 0

union all

select
    'agg_partner_spend_by_region' as release_name,
    count(*) as rows_below_k
from {{ ref('agg_partner_spend_by_region') }}
where customer_count < {{ var('min_k_partner') }}
having count(*) > 0
