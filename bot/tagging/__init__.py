"""Tags from replies: keyword, regex, survey and FAQ-topic rules, stored per contact."""
