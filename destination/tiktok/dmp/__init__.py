"""Audiences as code (issue 17): definition files, TikTok's audience facts, customer files,
and the plan / apply of a folder of definitions against an advertiser's audiences."""
