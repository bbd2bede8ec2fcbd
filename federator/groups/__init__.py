"""Server groups (Nova's os-server-groups) and their rules, kept across hosts, zones and
clouds: the rule itself (``rules``), where members are and what a zone may take
(``placement``), the groups made in remote clouds (``remote``) and the API-facing service
(``service``)."""
