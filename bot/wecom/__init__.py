"""WeCom (企业微信) customer lifecycle: API client, welcome, channel live codes, groups, tag sync."""
