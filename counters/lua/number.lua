-- Prepended to the hot-path scripts: a string that is a number by construction (an argument the
-- store sent, a counter a script wrote) as a number. `tonumber` parses its string twice (Lua 5.1
-- checks that it is a number, then converts it: two strtod calls); arithmetic parses it once.
-- `tonumber` stays where a value may be missing or not a number.
local function number(text)
  return text * 1
end
