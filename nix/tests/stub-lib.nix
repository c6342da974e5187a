# A stand-in for the few nixpkgs `lib` functions the module uses, written with builtins
# only, so the module's logic can be evaluated where nixpkgs cannot be fetched. The
# option constructors return plain attribute sets that the tests can look into.
rec {
  toInt = s: builtins.fromJSON s;
  concatLists = builtins.concatLists;
  concatStringsSep = builtins.concatStringsSep;
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);
  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  filterAttrsRecursive =
    pred: attrs:
    builtins.listToAttrs (
      builtins.concatMap (
        name:
        let
          v = attrs.${name};
        in
        if pred name v then
          [
            {
              inherit name;
              value = if builtins.isAttrs v then filterAttrsRecursive pred v else v;
            }
          ]
        else
          [ ]
      ) (builtins.attrNames attrs)
    );
  recursiveUpdate =
    lhs: rhs:
    lhs
    // builtins.mapAttrs (
      name: v:
      if builtins.isAttrs v && builtins.isAttrs (lhs.${name} or null) then
        recursiveUpdate lhs.${name} v
      else
        v
    ) rhs;
  getExe = pkg: "${pkg}/bin/${pkg.meta.mainProgram or "sightline"}";

  # Option declarations and conditional definitions, as inspectable data.
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable ${name}.";
  };
  mkPackageOption = _pkgs: name: _: mkOption {
    type = types.package;
    default = { outPath = "/nix/store/0000000000000000000000000000000-${name}"; meta.mainProgram = name; };
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  types = {
    bool = "bool";
    str = "str";
    package = "package";
    nullOr = t: "nullOr ${t}";
    submodule = m: { submodule = m; };
  };
}
