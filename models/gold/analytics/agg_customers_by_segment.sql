-- Customer counts by country and age band for analytics, over customers who consented to
-- analytics. A k-anonymous release: segments with fewer than k customers are folded into an
-- 'Other' remainder, so no published row describes fewer than k people.
with

customers as (
    select customers.*
    from {{ ref('stg_core_banking__customers') }} as customers
    where customers.subject_token in ({{ consented_subjects('analytics') }})
),

accounts as (
    select
        subject_token,
        count(*) as account_count,
        sum(balance) as total_balance
    from {{ ref('stg_core_banking__accounts') }}
    where account_status = 'open'
    group by subject_token
),

segmented as (
    select
        customers.subject_token,
        customers.country,
        customers.age_band,
        coalesce(accounts.account_count, 0) as account_count,
        coalesce(accounts.total_balance, 0) as total_balance,
        count(*) over (partition by customers.country, customers.age_band) as segment_size
    from customers
    left join accounts on customers.subject_token = accounts.subject_token
),

released as (
    select
        case when segment_size >= {{ var('min_k_gold') }} then country else 'Other' end as country,
        case when segment_size >= {{ var('min_k_gold') }} then age_band else 'Other' end as age_band,
        subject_token,
        account_count,
        total_balance
    from segmented
)

select
    country,
    age_band,
    count(distinct subject_token) as customer_count,
    cast(sum(account_count) as bigint) as open_account_count,
    round(avg(total_balance), 0) as avg_balance
from released
group by country, age_band
having count(distinct subject_token) >= {{ var('min_k_gold') }}
