"""Jobs, whatever their kind: submit and every status change (lifecycle), the history's lists, tags
and timeline (history), what a job takes in (sources) and leaves (files), carrying a job out on
its nodes (runner), a shell into a running job (shell), and the estimate before a submit
(availability)."""
