-- Quarterly spend by country and merchant category for partners, from customers who consented
-- to partner sharing. The strictest release: k per partner_sharing policy, amounts rounded,
-- extreme averages top-coded, and cells below k suppressed into 'Other'.
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
        customer_country,
        merchant_category,
        subject_token,
        amount,
        count(distinct subject_token) over (
            partition by {{ generalize_date('transaction_date', 'quarter') }}, customer_country, merchant_category
        ) as cell_customers
    from transactions
),

released as (
    select
        spend_quarter,
        case when cell_customers >= {{ var('min_k_partner') }} then customer_country else 'Other' end as customer_country,
        case when cell_customers >= {{ var('min_k_partner') }} then merchant_category else 'Other' end as merchant_category,
        subject_token,
        amount
    from cells
)

select
    spend_quarter,
    customer_country,
    merchant_category,
    count(distinct subject_token) as customer_count,
    round(sum(amount), -2) as total_amount_rounded,
    {{ top_bottom_code('round(avg(amount), 0)', 0, 500) }} as avg_amount_coded
from released
group by all
having count(distinct subject_token) >= {{ var('min_k_partner') }}
