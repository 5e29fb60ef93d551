"""Running the site: audit log, accounting, job-end notifications, site settings, the dashboard."""
