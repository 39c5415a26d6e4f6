-- Quarterly spend by region and merchant group for partners, from customers who consented to
-- partner sharing. The strictest release: countries and merchant categories generalized through
-- the hierarchy seeds, k per partner_sharing policy, amounts rounded, averages top-coded, and
-- cells below k suppressed into 'Other'.
with

transactions as (
    select transactions.*, customers.country as customer_country
    from {{ ref('stg_cards__transactions') }} as transactions
    inner join {{ ref('stg_core_banking__customers') }} as customers
        on transactions.subject_token = customers.subject_token
    where transactions.subject_token in ({{ consented_subjects('partner_sharing') }})
),

cells as (
    select
        {{ generalize_date('transaction_date', 'quarter') }} as spend_quarter,
        {{ generalize_hierarchy('customer_country', ref('country_regions'), 1, 'other') }} as customer_region,
        {{ generalize_hierarchy('merchant_category', ref('merchant_category_hierarchy'), 1, 'other') }} as merchant_group,
        subject_token,
        amount
    from transactions
),

sized as (
    select
        *,
        count(distinct subject_token) over (
            partition by spend_quarter, customer_region, merchant_group
        ) as cell_customers
    from cells
),

released as (
    select
        spend_quarter,
        case when cell_customers >= {{ var('min_k_partner') }} then customer_region else 'Other' end as customer_region,
        case when cell_customers >= {{ var('min_k_partner') }} then merchant_group else 'Other' end as merchant_group,
        subject_token,
        amount
    from sized
)

select
    spend_quarter,
    customer_region,
    merchant_group,
    count(distinct subject_token) as customer_count,
    round(sum(amount), -2) as total_amount_rounded,
    {{ top_bottom_code('round(avg(amount), 0)', 0, 500) }} as avg_amount_coded
from released
group by all
having count(distinct subject_token) >= {{ var('min_k_partner') }}
